"""Tickets with a phase history written at chosen moments, for the pages that read history (analytics)."""

from board.models import PhaseHistory, Ticket


def history(board, title, *steps):
    """A ticket whose history is `steps`: (phase key, moment), the first its creation; written row by row."""
    phases = {phase.key: phase for phase in board.workflow.phases.all()}
    ticket = Ticket.objects.create(board=board, title=title, phase=phases[steps[-1][0]])
    previous = ""
    for key, moment in steps:
        row = PhaseHistory.objects.create(ticket=ticket, from_key=previous, to_key=key, to_phase=phases[key], actor="t")
        PhaseHistory.objects.filter(pk=row.pk).update(created_at=moment)
        previous = key
    return ticket
