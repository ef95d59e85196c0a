"""The discoveries page of a board: every discovery with its filters and pages, and resolving one from the list."""

from urllib.parse import urlencode

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.cache import patch_vary_headers
from django.views.decorators.http import require_GET, require_POST

from board.errors import Refused
from board.models import Board, Task
from board.selectors import last_event_id
from phases.models import Phase

from ..models import Discovery
from ..services import REASON_MAX, discovery_resolve

# Rows per page; "Load more" fetches the next ones. A board may hold thousands of discoveries.
PAGE_SIZE = 50
FILTER_FIELDS = ("type", "status", "phase", "ticket")


def _board_for(request, slug):
    """The board if the user is a member or staff; 404 otherwise, so that outsiders learn nothing."""
    return get_object_or_404(Board.objects.visible_to(request.user).select_related("workflow"), slug=slug)


class DiscoveryFilterForm(forms.Form):
    """The list's filters and its place (`after`), from the query string, so a filtered list can be shared."""

    type = forms.ChoiceField(choices=[("", "Any type"), *Discovery.Type.choices], required=False)
    status = forms.ChoiceField(choices=[("", "Any status"), *Discovery.Resolution.choices], required=False)
    phase = forms.ChoiceField(required=False, label="Found in phase")
    ticket = forms.CharField(required=False, max_length=20, label="Ticket", strip=True)
    after = forms.IntegerField(required=False, min_value=1, max_value=2**53, widget=forms.HiddenInput)

    def __init__(self, data, *, board, phases):
        super().__init__(data)
        self.board = board
        self.phases = {phase.key: phase for phase in phases}
        self.fields["phase"].choices = [("", "Any phase"), *((phase.key, phase.name) for phase in phases)]
        self.fields["ticket"].widget.attrs.update({"inputmode": "numeric", "placeholder": "#", "size": 6})

    def clean_ticket(self):
        value = self.cleaned_data["ticket"].removeprefix("#")
        if not value:
            return None
        if not value.isdigit() or len(value) > 15:
            raise ValidationError("Give a ticket number, such as 12 or #12.")
        if not self.board.tickets.filter(pk=int(value)).exists():
            raise ValidationError(f"Ticket #{value} is not on this board.")
        return int(value)

    def valid(self, name):
        """The value of a filter when it is valid; an invalid one is ignored (and reported by the form)."""
        if not self.is_bound or name in self.errors:
            return None
        return self.cleaned_data.get(name) or None


def _filter_query(form):
    """The valid filters as a query string, to keep them on links, pages and redirects."""
    names = [name for name in FILTER_FIELDS if form.valid(name) is not None]
    return urlencode([(name, form.data[name]) for name in names])


def _discoveries(board, form):
    """The board's discoveries that match the valid filters, newest first, with what the rows show."""
    spawned = Task.objects.select_related("phase").only("pk", "title", "status", "ticket_id", "phase__name")
    found = Discovery.objects.filter(source_task__ticket__board_id=board.pk)
    if form.valid("type"):
        found = found.filter(discovery_type=form.valid("type"))
    if form.valid("status"):
        found = found.filter(resolution_status=form.valid("status"))
    if form.valid("phase"):
        found = found.filter(source_task__phase_id=form.phases[form.valid("phase")].pk)
    if form.valid("ticket"):
        found = found.filter(source_task__ticket_id=form.valid("ticket"))
    # By id, newest first: ids are handed out in the order discoveries are recorded, and the
    # primary key's index makes each next page ("after" the last id shown) as cheap as the first.
    return found, (
        found.select_related("source_task__phase")
        .prefetch_related(Prefetch("spawned_tasks", queryset=spawned.order_by("pk")))
        .order_by("-pk")
    )


@login_required
@require_GET
def discovery_list(request, slug):
    """The page, or for htmx its list (a filter change, a live refresh) or its next rows (`after`)."""
    board = _board_for(request, slug)
    # Read before the list: whatever happens after this id, the page's live connection replays.
    seen = last_event_id(board.pk)
    phases = list(Phase.objects.filter(workflow_id=board.workflow_id).in_order())
    form = DiscoveryFilterForm(request.GET, board=board, phases=phases)
    form.is_valid()
    matching, ordered = _discoveries(board, form)
    after = form.valid("after")
    page = list((ordered.filter(pk__lt=after) if after else ordered)[: PAGE_SIZE + 1])
    filter_query = _filter_query(form)
    context = {
        "board": board,
        "form": form,
        "filtered": bool(filter_query),
        "filter_query": filter_query,
        "discoveries": page[:PAGE_SIZE],
        "has_more": len(page) > PAGE_SIZE,
        "after": after,
        "total": matching.count(),
        "now": timezone.now(),
        "last_event_id": seen,
        "reason_max": REASON_MAX,
        "closing": [Discovery.Resolution.RESOLVED, Discovery.Resolution.INVALID],
    }
    template = "discoveries/discoveries.html"
    if request.htmx and not request.htmx.boosted:
        # Next rows go after the rows already shown; anything else replaces the whole list.
        template += "#discovery-rows" if after and request.htmx.target != "discovery-list" else "#discovery-list"
    response = render(request, template, context)
    patch_vary_headers(response, ("HX-Request",))
    return response


class ResolveForm(forms.Form):
    status = forms.ChoiceField(
        choices=[
            (Discovery.Resolution.RESOLVED, "Resolved"),
            (Discovery.Resolution.INVALID, "Invalid"),
        ]
    )
    reason = forms.CharField(max_length=REASON_MAX, strip=False)


@login_required
@require_POST
def discovery_resolve_view(request, slug, pk):
    """Resolve a discovery or mark it invalid, with a reason; the outcome is a message on the list it came from."""
    board = _board_for(request, slug)
    discovery = get_object_or_404(Discovery, source_task__ticket__board=board, pk=pk)
    phases = list(Phase.objects.filter(workflow_id=board.workflow_id).in_order())
    filters = DiscoveryFilterForm(request.GET, board=board, phases=phases)
    filters.is_valid()
    form = ResolveForm(request.POST)
    if not form.is_valid():
        problems = (f"{name.title()}: {' '.join(errors)}" for name, errors in form.errors.items())
        messages.error(request, f"Discovery #{discovery.pk} was not changed. " + " ".join(problems))
    else:
        status = form.cleaned_data["status"]
        try:
            discovery_resolve(
                discovery=discovery, status=status, reason=form.cleaned_data["reason"], actor=request.user
            )
        except (PermissionDenied, Refused) as exc:
            messages.error(request, str(exc))
        except ValidationError as exc:
            messages.error(request, f"Discovery #{discovery.pk} was not changed. " + " ".join(exc.messages))
        else:
            word = "resolved" if status == Discovery.Resolution.RESOLVED else "marked invalid"
            messages.success(request, f"Discovery #{discovery.pk} {word}.")
    url = reverse("discoveries:list", args=[board.slug])
    query = _filter_query(filters)
    return redirect(f"{url}?{query}#discovery-{discovery.pk}" if query else f"{url}#discovery-{discovery.pk}")
