from django.apps import AppConfig


class BoardConfig(AppConfig):
    name = "board"
    verbose_name = "Boards and tickets"

    def ready(self):
        # A workflow reload that remaps a removed phase moves its tickets through the board's service
        # (history, versions, events); phases cannot import board, so it is told here.
        from phases.services import phase_mover_register

        from .services import phase_remap

        phase_mover_register(phase_remap)
