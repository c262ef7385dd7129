"""Small helpers every stage shares: files written atomically, hashes, argument checks, and
showing the package's log lines (`logs.show_logs`)."""
