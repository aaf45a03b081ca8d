"""kofinsent: Korean stock-forum titles -> stock direction. Everything after the crawled data lives here."""

__version__ = "0.1.0"
