"""The scheduler service process: a thin loop over core that executes queued runs and pending imports.

`python -m scheduler_service` runs it; the app and the CLI start it on demand
(`core.service_control.ensure_running`). Everything it knows lives in the store and the home, so a
restart (or a standby taking over) continues where the last leader stopped.
"""
