"""The method: zero-order estimators, tasks, update rules, safeguards and calibration."""
