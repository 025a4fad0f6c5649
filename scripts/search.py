"""Rank an embedded gallery (a reid-embed output) for query images: table, results.json, PNG, HTML.

    python scripts/search.py query.jpg queries/ --gallery outputs/gallery --top-k 10 [--exclude-same-camera]
"""

from reid.apps.search import main

if __name__ == "__main__":
    main()
