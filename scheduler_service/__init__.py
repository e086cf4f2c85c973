"""The scheduler service process: a thin loop over core that executes queued runs and due deployments.

It arrives with the Execution issue; the store it will use (`core.store`) already serves several
processes at once without any of them holding the DuckDB file.
"""
