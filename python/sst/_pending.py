"""Forward passes kept from a framework's forward call until its backward call.

The PyTorch and JAX wrappers run a layer's forward inside an op whose outputs must be arrays,
so the ``sst.Forward`` the backward needs is kept here under an integer token that travels as
an output. The store holds at most ``LIMIT_BYTES`` of arrays (the oldest entries go first); a
backward whose entry is gone re-runs the forward from ``theta`` and the seed, which gives the
same numbers (sst's noise is keyed by the seed), so eviction costs time, never correctness.
"""

import itertools
import threading
from collections import OrderedDict

LIMIT_BYTES = 1 << 30


class Pending:
    def __init__(self, limit_bytes=LIMIT_BYTES):
        self._limit = limit_bytes
        self._lock = threading.Lock()
        self._items = OrderedDict()
        self._bytes = 0
        # Tokens stay positive int32 values (JAX without x64 has no int64).
        self._tokens = (1 + i % (2**31 - 2) for i in itertools.count())

    def keep(self, fwd):
        """Stores ``fwd``; returns its token."""
        size = fwd.z.nbytes + fwd.w.nbytes
        with self._lock:
            token = next(self._tokens)
            self._items[token] = (fwd, size)
            self._bytes += size
            while self._bytes > self._limit and len(self._items) > 1:
                _, (_, old) = self._items.popitem(last=False)
                self._bytes -= old
        return token

    def take(self, token):
        """The forward pass stored under ``token`` (removed), or None."""
        with self._lock:
            item = self._items.pop(int(token), None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def __len__(self):
        return len(self._items)


PENDING = Pending()
