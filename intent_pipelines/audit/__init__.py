"""The audit chain: record format and hashing (record), appended through the state store."""
