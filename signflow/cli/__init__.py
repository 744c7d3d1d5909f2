"""The `signflow` command: one module per command group, assembled by `main`.

`context` is the only module the groups share: settings, the operator actor and
the services a command runs with (built and disposed of in one place).
"""
