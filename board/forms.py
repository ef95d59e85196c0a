"""Admin forms for tickets: every write goes through the ticket services, whose refusals become form errors."""

from django import forms
from django.core.exceptions import ValidationError
from django.db import transaction

from phases.models import Phase

from .models import Ticket
from .services import TransitionRefused, ticket_create, ticket_transition, ticket_update

EDITABLE_FIELDS = ("title", "description", "priority", "is_blocked", "blocked_reason")


class ServiceForm(forms.ModelForm):
    """A ModelForm whose validation ends by calling a service, which validates and writes.

    The services are the one copy of the ticket rules, so the model's own checks
    are not run, and the service runs last, when nothing after it can fail. The
    admin sets `actor`, the user the services record.
    """

    actor = None

    def _post_clean(self):
        if self.errors:
            return
        try:
            self.instance = self.call_service(self.cleaned_data)
        except TransitionRefused as exc:
            self.add_error(None, str(exc))
        except ValidationError as exc:
            for field, errors in exc.update_error_dict({}).items():
                self.add_error(field if field in self.fields else None, errors)

    def call_service(self, data):
        raise NotImplementedError


class TicketAddForm(ServiceForm):
    class Meta:
        model = Ticket
        fields = ("board", "title", "description", "priority", "phase")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["phase"].required = False
        self.fields["phase"].help_text = "Empty: the first phase of the board's workflow."
        self.fields["phase"].queryset = Phase.objects.select_related("workflow").order_by(
            "workflow__name", "sequence_order", "key"
        )

    def call_service(self, data):
        return ticket_create(
            board=data["board"],
            title=data["title"],
            description=data["description"],
            priority=data["priority"],
            phase=data["phase"],
            actor=self.actor,
        )


class TicketChangeForm(ServiceForm):
    move_to_phase = forms.ModelChoiceField(
        queryset=Phase.objects.none(),
        required=False,
        label="Move to phase",
        help_text="Moves follow the workflow's transitions unless forced.",
    )
    transition_reason = forms.CharField(
        required=False, label="Reason", widget=forms.Textarea(attrs={"rows": 2}), help_text="Required when forcing."
    )
    force = forms.BooleanField(
        required=False,
        label="Force (staff override)",
        help_text="Move even where the workflow has no such transition; recorded as an override.",
    )

    class Meta:
        model = Ticket
        fields = EDITABLE_FIELDS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        ticket = self.instance
        self.fields["move_to_phase"].queryset = (
            Phase.objects.filter(workflow_id=ticket.board.workflow_id).exclude(pk=ticket.phase_id).in_order()
        )

    def call_service(self, data):
        # Both or neither: a refused move must not leave the edit half-saved.
        with transaction.atomic():
            ticket = ticket_update(
                ticket=self.instance, actor=self.actor, **{name: data[name] for name in EDITABLE_FIELDS if name in data}
            )
            if data.get("move_to_phase"):
                ticket = ticket_transition(
                    ticket=ticket,
                    to_phase=data["move_to_phase"],
                    actor=self.actor,
                    reason=data.get("transition_reason", ""),
                    force=data.get("force", False),
                )
        return ticket
