"""The long-running daemon: schedules, metrics, HTTP API, reload, life cycle."""
