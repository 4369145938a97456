from django.apps import AppConfig


class TemplatingConfig(AppConfig):
    name = "templating"
    verbose_name = "Runtime templates"
