"""One or more filled-in instances of every `Result` class, for the round-trip test.

Each module here (one per technique package) has ``samples() -> list[Result]``;
`tests/test_results.py` checks that together they cover every format of
`mechscope.results.FORMATS`.
"""
