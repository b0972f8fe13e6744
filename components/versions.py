"""Pinned upstream artifacts: Calico manifests and calicoctl binaries, per release.

Every download the program or a node makes is checked against a sha256 from this module or from stack
config. The values were taken from the upstream release files (manifests) and from kubespray's checksum
table (calicoctl); see the README's "Pins" section.
"""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURES: tuple[str, ...] = ("amd64", "arm64", "ppc64le", "s390x")


@dataclass(frozen=True)
class ManifestPin:
    """The download URL of one release's calico.yaml, and its sha256."""

    url: str
    sha256: str


# Before v3.24 the repository held only a template at manifests/calico.yaml (the raw GitHub URL returns
# an 84-byte Jekyll template, not YAML), and users downloaded the rendered file from the docs site's
# archive, so those two releases pin the archive URL.
# NOTE: the v3.21.0 and v3.22.1 digests are of copies saved by third parties, because no upstream git blob
# exists. Whether the archive URLs still serve those bytes was not checked. A mismatch fails with both digests.
MANIFESTS: dict[str, ManifestPin] = {
    "v3.21.0": ManifestPin(
        "https://docs.projectcalico.org/archive/v3.21/manifests/calico.yaml",
        "3a244fa41aec58752ecc4dd432f0143c6a01de9260ba05d59ee586688ba5a39b",
    ),
    "v3.22.1": ManifestPin(
        "https://docs.projectcalico.org/archive/v3.22/manifests/calico.yaml",
        "2240f0a7ee68403784e614a63e251e87ccb8a5d95109dc02d55388110fafc20f",
    ),
    "v3.24.0": ManifestPin(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.24.0/manifests/calico.yaml",
        "ef82b77d790bb7c4fd0e2b5f1463c19fae00ff3dedf46b584f3abc46af3052c4",
    ),
    "v3.27.5": ManifestPin(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.27.5/manifests/calico.yaml",
        "a8b89fd22e304cea657d5a4ee06a350bb2287dc6d39ff83e06e8a7e5cf9f172b",
    ),
    "v3.29.7": ManifestPin(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.29.7/manifests/calico.yaml",
        "b200cb3c2c7341717abe98e4acc80a13117bcd2c9c46ad46e8c209c5753f0b2f",
    ),
    "v3.31.7": ManifestPin(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.31.7/manifests/calico.yaml",
        "d6d8a489a4ed8e5b8efd8b339047b496ca657b55ee2e3618e791507b0a853e8d",
    ),
    "v3.32.1": ManifestPin(
        "https://raw.githubusercontent.com/projectcalico/calico/v3.32.1/manifests/calico.yaml",
        "a1df919d9721cf667accdc3e72848911b0cb25cfab7d2478ad0c996302c95744",
    ),
}

# sha256 of calicoctl-linux-<arch> per release, from kubespray's checksum table. v3.21.0 and v3.32.1 have
# no pin anywhere the project could verify: v3.32.1 falls back to the release's own SHA256SUMS asset,
# and v3.21.0 (published before upstream wrote SHA256SUMS) needs calico:calicoctlSha256.
CALICOCTL_SHA256: dict[str, dict[str, str]] = {
    "v3.22.1": {
        "amd64": "b42be4f7c053f209127a9b9a6945ce11ab3bc0725f2741f92380400b008c6111",
        "arm64": "6ad55dd57190f474c2a186ad935f25e71ec8ca25fadf504dacfc1e19b1b70155",
        "ppc64le": "c7bf3d9bb77288e3c384f568eab657b47ef72f5147ce386ac01a60f0f19224ea",
    },
    "v3.24.0": {
        "amd64": "0da282a6a7870fe25742799a921730343c57a1609c5e255e1bb06b5e85011ee2",
        "arm64": "db306755fc9c6a746516eec33337bc102b0d546f6b9fc671795b47d1a878f05d",
        "ppc64le": "cf63f4820e792c101940af3ed6422e1b8769ffcbafd0c3672f2e86675733b053",
    },
    "v3.27.5": {
        "amd64": "0a63022166b353ebea49a2f250793019edf531dd5cdb0655da746e7c243aacba",
        "arm64": "1c929538565c9f885debb45cc38b3efb4e58d362400163a2eff2b56fad838334",
        "ppc64le": "7b8c8936e55e319b94d1fb71dacbef7617661f76241a4ed16289b5a2165fa62d",
    },
    "v3.29.7": {
        "amd64": "c4e281a404d14da561c65838195b2a4bcf18aebca1bede5ef6b99e0bf78cb8a0",
        "arm64": "484479aa441401adf0db2effb911562d25a4c9a3f022aa6a3b082d027108edec",
        "ppc64le": "b76f1bd1feb3a83a6591196d403b35e1ce97dfdc88babcf1f52f905c0c3cc94e",
    },
    "v3.31.7": {
        "amd64": "1b91928adc39861ba5e04d8d15c4ce489731269b07a8e7444c0fdf677f041113",
        "arm64": "d7adff41398cb77b97451bf238022376382725ff231228f78b3ebc35d9fb9fda",
        "ppc64le": "a7b4665a1a9fbaffc9e39b75185d20da32f181e9149abe494c86d6087b854213",
    },
}


def parse_release(version: str) -> tuple[int, int, int] | None:
    """Return (major, minor, patch) of a release name such as v3.31.7, or None when it is not one."""
    parts = version.removeprefix("v").split(".")
    if not version.startswith("v") or len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1]), int(parts[2])


def calicoctl_release_url(version: str, arch: str) -> str:
    """Return the upstream download URL of calicoctl-linux-<arch> for a release.

    calicoctl had its own repository until v3.21.2; from v3.21.4 the monorepo's release carries it,
    and from v3.22.0 only the monorepo does.
    """
    release = parse_release(version)
    old_repository = release is not None and release < (3, 21, 3)
    repository = "projectcalico/calicoctl" if old_repository else "projectcalico/calico"
    return f"https://github.com/{repository}/releases/download/{version}/calicoctl-linux-{arch}"


def release_publishes_sha256sums(version: str) -> bool:
    """Tell whether a release carries a SHA256SUMS asset (upstream wrote one from v3.21.6 and v3.22.3)."""
    release = parse_release(version)
    if release is None:
        return False
    if release[:2] == (3, 21):
        return release >= (3, 21, 6)
    if release[:2] == (3, 22):
        return release >= (3, 22, 3)
    return release >= (3, 23, 0)


def calicoctl_release_sha256sums_url(version: str) -> str:
    """Return the URL of a release's SHA256SUMS asset in the monorepo."""
    return f"https://github.com/projectcalico/calico/releases/download/{version}/SHA256SUMS"
