"""The chat in process: its parts, conversations and stores, isolation between users, store
failures, shared replies, the model upstream and its fake."""
