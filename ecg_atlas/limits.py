"""How much one request may ask for: the k and page-size limits, each derived from one constant.

Every layer that bounds a search or a page imports its figure from here, named for what it
bounds, so the layers cannot drift apart:

* ``MAX_K`` 10,000 — the store's hard ceiling on hits per query (``Store.search`` refuses more):
  FAISS keeps k scores and ids per query while it searches, and past this a caller wants an
  export, not a search;
* ``SERVER_MAX_K`` 1,000 — ``ecg-atlas serve --max-k``'s default: one Search response carries k
  hits with their metadata (and vectors on request), built and sent whole;
* ``WEB_MAX_K`` 50 — one page of hits in the web atlas, each drawn as a card with its traces;
* ``DEFAULT_K`` 10 — hits when a request does not say (Search, ``Client.search``);
  ``SHOWN_K`` 5 — what the web atlas shows first;
* ``MAX_SUGGESTED_IDS`` 200 — ``SuggestIds``' page (the ids one prefix may list); 20 when a
  request does not say, 12 in the web atlas's completion list.

Only the standard library: the store, the server, the client and the web atlas all import it.
"""

from __future__ import annotations

MiB = 1024 * 1024

#: hits one query may ask the store for (the hard ceiling every other k limit sits under)
MAX_K = 10_000
#: the server's default ``--max-k``: hits one Search may ask for
SERVER_MAX_K = MAX_K // 10
#: hits on one page of the web atlas
WEB_MAX_K = SERVER_MAX_K // 20
#: hits when a Search request leaves k unset
DEFAULT_K = 10
#: hits the web atlas asks for when the page does not say
SHOWN_K = DEFAULT_K // 2

#: ids one SuggestIds call may return
MAX_SUGGESTED_IDS = SERVER_MAX_K // 5
#: ids when a SuggestIds request leaves its limit unset
DEFAULT_SUGGESTED_IDS = MAX_SUGGESTED_IDS // 10
#: ids the web atlas's completion list asks for
WEB_SUGGESTED_IDS = 12

#: largest gRPC message either side accepts by default (``ServerConfig``, ``Client``): the largest
#: ECG the preprocessing accepts (600 s, 12 leads, 1000 Hz, float32) is 28.8 MB
MAX_MESSAGE_BYTES = 64 * MiB
