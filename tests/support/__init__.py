"""Helpers shared by the test suites: the json-logic-js oracle client, Hypothesis strategies, workspaces to start from."""
