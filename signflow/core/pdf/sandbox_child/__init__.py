"""The sandbox's child program, a package run as `python -I <this directory> MEMORY CPU`
by signflow.core.pdf.sandbox (see __main__.py). Importing the package loads nothing:
the parent imports only `wire` (framing and limits, standard library only)."""
