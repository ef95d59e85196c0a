"""Work in threads of their own, as concurrent requests or processes would do it, each with its own connection."""

import threading

from django.db import connections


def in_thread(work):
    """Start `work` in a new thread, which closes its database connections when done; returns the thread."""

    def run():
        try:
            work()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread
