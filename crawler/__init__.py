"""Data in: everything that talks to Naver (forum posts, daily prices, the stock universe).

The parsers in :mod:`crawler.sources` are pure functions of the page text; fetching, politeness and storage live in
:mod:`crawler.http`, :mod:`crawler.backfill` and :mod:`crawler.store`. :func:`crawler.crawl.crawl` is the one crawl
loop (per stock: posts, then prices) behind ``kofinsent crawl posts|prices`` and the crawl step of ``kofinsent run``.
"""
