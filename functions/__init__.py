"""Lambda code of the Bitbucket DIY backup orchestrator: one asset, one handler module per step."""
