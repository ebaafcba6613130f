"""Hugging Face Hub repos as tensor sources (refs, snapshots, transfers, error mapping, the source itself), and
pushes of finished folders; `client.HubClient` is a run's one way to the Hub."""
