"""End-to-end test in Microsoft 365 Agents Playground (test_playground.py) and `make playground` (launch.py)."""
