"""The pure core: planning, recovery, statistics, verdicts. No sockets, no sleeping."""
