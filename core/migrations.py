"""Versioned schema of the metadata store: (version, name, statements), applied in order on open.

Append only: never edit a released migration; add a new one (later issues add their tables here).
`core.store.migrate` runs each in one transaction and backs up the file before upgrading it.
"""
from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (1, "identity, audit and settings", [
        """CREATE TABLE users (
            id VARCHAR PRIMARY KEY,
            username VARCHAR NOT NULL UNIQUE,
            email VARCHAR,
            display_name VARCHAR,
            password_hash VARCHAR NOT NULL,
            active BOOLEAN NOT NULL DEFAULT TRUE,
            must_change_password BOOLEAN NOT NULL DEFAULT FALSE,
            is_platform_admin BOOLEAN NOT NULL DEFAULT FALSE,
            language VARCHAR,
            timezone VARCHAR,
            sessions_valid_after TIMESTAMPTZ NOT NULL DEFAULT now(),
            last_login_at TIMESTAMPTZ,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )""",
        """CREATE TABLE namespaces (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            description VARCHAR NOT NULL DEFAULT '',
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            created_by VARCHAR
        )""",
        """CREATE TABLE memberships (
            namespace_id VARCHAR NOT NULL,
            user_id VARCHAR NOT NULL,
            role VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            PRIMARY KEY (namespace_id, user_id)
        )""",
        "CREATE SEQUENCE audit_logs_id START 1",
        """CREATE TABLE audit_logs (
            id BIGINT PRIMARY KEY DEFAULT nextval('audit_logs_id'),
            occurred_at TIMESTAMPTZ NOT NULL,
            actor_user_id VARCHAR,
            actor_username VARCHAR,
            action VARCHAR NOT NULL,
            resource_type VARCHAR,
            resource_id VARCHAR,
            namespace VARCHAR,
            success BOOLEAN NOT NULL,
            ip VARCHAR,
            user_agent VARCHAR,
            request_id VARCHAR,
            detail VARCHAR
        )""",
        "CREATE INDEX audit_logs_time ON audit_logs (occurred_at)",
        "CREATE SEQUENCE login_attempts_id START 1",
        """CREATE TABLE login_attempts (
            id BIGINT PRIMARY KEY DEFAULT nextval('login_attempts_id'),
            attempted_at TIMESTAMPTZ NOT NULL,
            username VARCHAR NOT NULL,
            ip VARCHAR,
            outcome VARCHAR NOT NULL
        )""",
        "CREATE INDEX login_attempts_user ON login_attempts (username, attempted_at)",
        """CREATE TABLE settings (
            key VARCHAR PRIMARY KEY,
            value VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
            updated_by VARCHAR
        )""",
    ]),
    (2, "data center datasets", [
        """CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY,
            namespace VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            description VARCHAR NOT NULL DEFAULT '',
            source VARCHAR NOT NULL,
            format VARCHAR NOT NULL DEFAULT 'json',
            original_format VARCHAR,
            raw_path VARCHAR,
            path VARCHAR NOT NULL,
            ingest_status VARCHAR NOT NULL,
            ingest_config VARCHAR,
            error VARCHAR,
            schema VARCHAR,
            row_count BIGINT,
            lineage VARCHAR,
            tags VARCHAR NOT NULL DEFAULT '[]',
            created_by VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            UNIQUE (namespace, name)
        )""",
    ]),
    (3, "execution: pipelines, runs, run events, LLM secrets; import worker", [
        "ALTER TABLE datasets ADD COLUMN ingest_worker VARCHAR",
        """CREATE TABLE pipelines (
            id VARCHAR PRIMARY KEY,
            namespace VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            description VARCHAR NOT NULL DEFAULT '',
            state VARCHAR NOT NULL DEFAULT 'active',
            config_path VARCHAR NOT NULL,
            input_dataset_id VARCHAR,
            created_by VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            last_run_status VARCHAR,
            last_run_at TIMESTAMPTZ,
            UNIQUE (namespace, name)
        )""",
        """CREATE TABLE runs (
            id VARCHAR PRIMARY KEY,
            namespace VARCHAR NOT NULL,
            pipeline_id VARCHAR,
            pipeline_name VARCHAR NOT NULL,
            deployment_id VARCHAR,
            trigger VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            input_dataset_id VARCHAR,
            sample_rows INTEGER,
            save_output_as VARCHAR,
            output_dataset_id VARCHAR,
            output_path VARCHAR,
            run_dir VARCHAR NOT NULL,
            log_path VARCHAR NOT NULL,
            progress_path VARCHAR NOT NULL,
            config_path VARCHAR NOT NULL,
            queued_at TIMESTAMPTZ NOT NULL,
            started_at TIMESTAMPTZ,
            finished_at TIMESTAMPTZ,
            duration_seconds DOUBLE,
            cost DOUBLE,
            tokens_prompt BIGINT,
            tokens_completion BIGINT,
            input_rows BIGINT,
            output_rows BIGINT,
            warnings VARCHAR NOT NULL DEFAULT '[]',
            error VARCHAR,
            error_category VARCHAR,
            worker VARCHAR,
            cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
            retry_of VARCHAR,
            attempt INTEGER NOT NULL DEFAULT 1,
            scheduled_for TIMESTAMPTZ,
            created_by VARCHAR
        )""",
        "CREATE INDEX runs_queue ON runs (status, queued_at)",
        "CREATE INDEX runs_namespace ON runs (namespace, queued_at)",
        "CREATE SEQUENCE run_events_id START 1",
        """CREATE TABLE run_events (
            id BIGINT PRIMARY KEY DEFAULT nextval('run_events_id'),
            occurred_at TIMESTAMPTZ NOT NULL,
            kind VARCHAR NOT NULL,
            run_id VARCHAR,
            deployment_id VARCHAR,
            namespace VARCHAR,
            detail VARCHAR
        )""",
        """CREATE TABLE llm_secrets (
            name VARCHAR PRIMARY KEY,
            ciphertext VARCHAR NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            updated_by VARCHAR
        )""",
    ]),
    (4, "legacy files a user deleted from the Data Center stay dismissed", [
        """CREATE TABLE dismissed_legacy_files (
            namespace VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            dismissed_at TIMESTAMPTZ NOT NULL,
            dismissed_by VARCHAR,
            PRIMARY KEY (namespace, path)
        )""",
    ]),
]
