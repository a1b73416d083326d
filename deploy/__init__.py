"""Deploy: the CloudFormation stack (template, lint, change sets), artifacts, smoke test, rollback."""
