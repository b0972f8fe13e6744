"""Pulumi entry point: the program itself lives in components.program so that tests can call it."""

from components.program import run

run()
