"""The engine: pure Python/numpy/pandas trading logic shared by backtests, paper and live.

Nothing here imports Django, Celery, Channels or ccxt (tests/engine/test_imports.py enforces it), and
nothing reads the wall clock: ghosts get time from the bars they are handed, so the same code gives
the same answer in a backtest and live.
"""
