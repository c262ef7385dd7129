"""Small helpers every stage shares: files written atomically, hashes, argument checks."""
