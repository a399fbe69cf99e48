"""The local controller: store watcher, topology cache, apps, reconciler, switch adapters."""
