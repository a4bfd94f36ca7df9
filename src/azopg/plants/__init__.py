"""Plants: the rollout protocol, the exact linear plant, black-box adapters and wrappers."""
