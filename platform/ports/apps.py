from django.apps import AppConfig


class PortsConfig(AppConfig):
    name = "ports"
    verbose_name = "Port leases"

    def ready(self):
        from ports import signals  # noqa: F401  (connects the range-change guard)
