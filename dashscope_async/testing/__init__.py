"""The DashScope emulator: a faithful stand-in for the service (extra ``testing``)."""
