"""One module per command, and the request/result types they take and return (`types.py`).

This is where sources, bases, the math and adapter files meet; it prints nothing. Progress and warnings
go through an `Events` object the caller supplies. The stable entry points are re-exported by `api.py`.
"""
