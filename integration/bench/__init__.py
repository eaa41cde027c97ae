"""`make bench`: our proxy against nginx direct, tinyproxy and mitmproxy in one run.

Entry point: ``python -m integration.bench.run``. Every listener is on 127.0.0.1.
Modules import nothing heavy at package import time (the plot module runs in another venv).
"""
