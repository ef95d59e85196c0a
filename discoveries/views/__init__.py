"""The discoveries app's pages, one module per page: the workflow graph, the discoveries list, analytics."""
