"""Developer tools: benchmarks, the RTSP test server, demo cameras and test videos.

Not part of the product (`make install` copies `streamd/` alone); run from the project
root: `python -m devtools.bench NAME`, `python -m devtools.testserver`.
"""
