"""Event sources that start runs: queues (SQS, S3 notifications) turned into TriggerEvents."""
