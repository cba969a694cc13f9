"""s3prl interop: ``read`` imports s3prl's Mockingjay / AALBERT checkpoint files (every config
era, without executing anything from them), ``export`` writes ours in s3prl 0.4.18's format,
and ``keys`` is the state-dict table both use."""
