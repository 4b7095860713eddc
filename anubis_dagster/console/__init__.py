"""The operator's console: answers to the questions the ops team asks every day, as plain
functions (tested without Dagster) behind a CLI command and a Launchpad job."""
