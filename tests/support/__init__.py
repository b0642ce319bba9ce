"""Helpers shared by the test suites: the json-logic-js oracle client and Hypothesis strategies."""
