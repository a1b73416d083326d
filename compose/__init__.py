"""The one place that composes stages (docs/design.md, "Shape").

The stages (builder/, validate/, sync/, deploy/, runtime/) import pipeline/
and never each other; what runs several of them in order lives here:

- ``compose.deploy``: deploy = build, validate's static checks, sync, stack
  (the deployer's ``Steps``);
- ``compose.serve``: serve = lock and build when needed, sync to the local
  folder, run the function behind the local API.

tasks.py calls a stage or one of these.
"""
