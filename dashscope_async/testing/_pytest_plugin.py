"""pytest fixtures for testing apps against the emulator (loaded through the pytest11 entry point).

Imports nothing heavy at load time, so installing dashscope_async never slows or breaks pytest.
"""
