"""Loading workflow definitions into the database and exporting them back."""

import re
from dataclasses import dataclass, field

from django.db import models, transaction

from .models import BoardColumn, Phase, Workflow
from .schema import (
    SLUG_PATTERN,
    ColumnDefinition,
    DefaultTask,
    ExpectedOutput,
    PhaseConfiguration,
    PhaseDefinition,
    ValidationCriterion,
    WorkflowDefinition,
)
from .workflow_files import Problem, WorkflowFileError, dump_workflow

# Who moves the rows of a phase a reload removes. Tickets, tasks and agents belong to the board app, which
# this app never imports (imports go one way: phases <- board). Moving a ticket is the board's business: it
# writes the ticket's history and tells open boards, so the board app registers a mover here from its
# AppConfig.ready(), and every path that loads a workflow (load_workflow, its --watch mode, the admin's
# import) reaches it through apply_definition. A registry rather than an argument, so that no caller can
# forget it; rather than a signal, so that it is one explicit call inside the reload's transaction.
_phase_movers = []


def phase_mover_register(mover):
    """Have `mover(*, old_phase, new_phase)` move its app's rows off a phase a reload removes and remaps.

    Called inside the reload's transaction, after the new phases and columns are written and before the old
    phase is deleted. Whatever still points at the old phase afterwards is re-pointed by a plain update.
    """
    if mover not in _phase_movers:
        _phase_movers.append(mover)


@dataclass
class LoadResult:
    workflow: Workflow
    created: bool
    dry_run: bool = False
    phases_added: list = field(default_factory=list)
    phases_updated: list = field(default_factory=list)
    phases_removed: list = field(default_factory=list)
    # {old phase key: (new phase key, {"tickets": 3, ...})}
    remapped: dict = field(default_factory=dict)

    def summary(self):
        verb = "would be" if self.dry_run else "was"
        state = "created" if self.created else "updated"
        lines = [f"Workflow {self.workflow.slug!r} {verb} {state} (version {self.workflow.version})."]
        for label, keys in (
            ("added", self.phases_added),
            ("updated", self.phases_updated),
            ("removed", self.phases_removed),
        ):
            if keys:
                lines.append(f"  phases {label}: {', '.join(keys)}")
        for old, (new, counts) in self.remapped.items():
            moved = ", ".join(f"{count} {name}" for name, count in counts.items())
            lines.append(f"  {old} -> {new}: {moved}")
        return "\n".join(lines)


class _DryRun(Exception):
    pass


def _referencing_relations(phase_model):
    """Relations from other apps' rows that stop a phase from being deleted (tickets, tasks, ...)."""
    return [
        relation
        for relation in phase_model._meta.related_objects
        if getattr(relation, "on_delete", None) in (models.PROTECT, models.RESTRICT)
    ]


def _references(phase_model, phase):
    counts = {}
    for relation in _referencing_relations(phase_model):
        count = relation.related_model._base_manager.filter(**{relation.field.name: phase}).count()
        if count:
            meta = relation.related_model._meta
            counts[str(meta.verbose_name if count == 1 else meta.verbose_name_plural)] = count
    return counts


def apply_definition(definition, *, slug, overwrite=False, remap=None, registry=None):
    """Write a validated definition; all or nothing. `registry` lets migrations pass historical models."""
    WorkflowModel = registry.get_model("phases", "Workflow") if registry else Workflow
    PhaseModel = registry.get_model("phases", "Phase") if registry else Phase
    ColumnModel = registry.get_model("phases", "BoardColumn") if registry else BoardColumn
    remap = dict(remap or {})

    workflow = WorkflowModel._base_manager.select_for_update().filter(slug=slug).first()
    created = workflow is None
    if not created and not overwrite:
        raise WorkflowFileError(
            [Problem("", f"workflow {slug!r} already exists; load it with overwrite to replace it")]
        )

    new_keys = [phase.id for phase in definition.phases]
    existing = {} if created else {phase.key: phase for phase in PhaseModel._base_manager.filter(workflow=workflow)}
    removed = [key for key in existing if key not in new_keys]

    problems = []
    for old, new in remap.items():
        if old not in existing:
            problems.append(Problem("--remap", f"{old!r} is not a phase of workflow {slug!r}"))
        elif old not in removed:
            problems.append(Problem("--remap", f"{old!r} stays in the file, so nothing moves out of it"))
        if new not in new_keys:
            problems.append(Problem("--remap", f"{new!r} is not a phase in the file"))
    references = {key: _references(PhaseModel, existing[key]) for key in removed}
    for key, counts in references.items():
        if counts and key not in remap:
            used = ", ".join(f"{count} {name}" for name, count in counts.items())
            problems.append(
                Problem(
                    "phases",
                    f"phase {key!r} would be removed but is still used by {used}; keep it or remap it ({key}=NEW_PHASE)",
                )
            )
    if problems:
        raise WorkflowFileError(problems)

    if created:
        workflow = WorkflowModel(slug=slug)
    else:
        workflow.version += 1
    workflow.name = definition.name
    workflow.description = definition.description
    # A migration's historical Workflow may predate these fields; they are then plain attributes, not saved.
    workflow.has_result = definition.has_result
    workflow.result_criteria = list(definition.result_criteria)
    workflow.on_result_found = definition.on_result_found
    workflow.save()

    result = LoadResult(workflow=workflow, created=created)
    phases = {}
    for item in definition.phases:
        phase = existing.get(item.id) or PhaseModel(workflow=workflow, key=item.id)
        (result.phases_updated if phase.pk else result.phases_added).append(item.id)
        phase.name = item.name
        phase.description = item.description
        phase.sequence_order = item.sequence_order
        phase.is_terminal = item.is_terminal
        phase.done_definitions = list(item.done_definitions)
        phase.expected_outputs = [output.model_dump(exclude_none=True) for output in item.expected_outputs]
        phase.phase_prompt = item.phase_prompt
        phase.next_steps_guide = list(item.next_steps_guide)
        # A historical Phase (migrations before 0007) has no such column and keeps it unsaved.
        phase.validation_criteria = [criterion.model_dump(exclude_none=True) for criterion in item.validation_criteria]
        phase.configuration = item.configuration.model_dump(exclude_none=True)
        phase.save()
        phases[item.id] = phase
    for item in definition.phases:
        phases[item.id].allowed_transitions.set([phases[key] for key in item.allowed_transitions])

    column_items = definition.columns()
    old_columns = {column.key: column for column in ColumnModel._base_manager.filter(workflow=workflow)}
    columns = {}
    for item in column_items:
        column = old_columns.pop(item.id, None) or ColumnModel(workflow=workflow, key=item.id)
        column.name = item.name
        column.description = item.description
        column.sequence_order = item.sequence_order
        column.wip_limit = item.wip_limit
        column.wip_policy = item.wip_policy
        column.is_terminal = item.is_terminal
        # Filled in by validation; a historical model (migrations before 0006) has no such column and keeps it unsaved.
        column.category = item.category
        column.color = item.color_theme
        column.auto_transition_to = None
        column.save()
        column.phases.set([phases[key] for key in item.phase_mapping])
        columns[item.id] = column
    for column in old_columns.values():
        column.delete()
    for item in column_items:
        if item.auto_transition_to:
            columns[item.id].auto_transition_to = columns[item.auto_transition_to]
            columns[item.id].save(update_fields=["auto_transition_to"])

    # After the columns: a moved ticket goes to the end of its new phase's column as the file defines it.
    for old in removed:
        if old in remap:
            target = phases[remap[old]]
            # Historical models (migrations) have no movers' services to go through.
            for mover in _phase_movers if registry is None else ():
                mover(old_phase=existing[old], new_phase=target)
            for relation in _referencing_relations(PhaseModel):
                relation.related_model._base_manager.filter(**{relation.field.name: existing[old]}).update(
                    **{relation.field.name: target}
                )
            result.remapped[old] = (remap[old], references[old])
        existing[old].delete()
        result.phases_removed.append(old)
    return result


def workflow_load(*, definition, slug=None, overwrite=False, remap=None, dry_run=False):
    """Create or replace a workflow from a validated definition.

    Refuses (WorkflowFileError) to overwrite without `overwrite`, and to remove a
    phase that tickets still use unless `remap` says where they go. With
    `dry_run` every check and write happens, then is rolled back.
    """
    slug = slug or definition.slug
    if not slug:
        raise WorkflowFileError([Problem("slug", "the workflow needs a slug: give --slug or a top-level 'slug' key")])
    if not re.fullmatch(SLUG_PATTERN, slug) or len(slug) > 100:
        raise WorkflowFileError(
            [Problem("slug", f"{slug!r} is not a valid slug: use up to 100 letters, digits, hyphens and underscores")]
        )
    try:
        with transaction.atomic():
            result = apply_definition(definition, slug=slug, overwrite=overwrite, remap=remap)
            if dry_run:
                result.dry_run = True
                raise _DryRun
    except _DryRun:
        pass
    return result


def _configuration(stored):
    """A stored configuration in the file's shape; its default tasks become models, so they export as written."""
    configuration = dict(stored) if isinstance(stored, dict) else stored
    tasks = configuration.get("default_tasks") if isinstance(configuration, dict) else None
    if isinstance(tasks, list):
        configuration["default_tasks"] = [
            DefaultTask.model_construct(**task) if isinstance(task, dict) else task for task in tasks
        ]
    return PhaseConfiguration.model_construct(**configuration) if isinstance(configuration, dict) else configuration


def workflow_definition(workflow):
    """The definition of a stored workflow, in the file's shape."""
    phases = list(workflow.phases.all().with_transitions().order_by("sequence_order", "key"))
    columns = list(
        workflow.columns.prefetch_related(models.Prefetch("phases", queryset=Phase.objects.in_order()))
        .select_related("auto_transition_to")
        .order_by("sequence_order", "key")
    )
    return WorkflowDefinition.model_construct(
        slug=workflow.slug,
        name=workflow.name,
        description=workflow.description,
        has_result=workflow.has_result,
        result_criteria=workflow.result_criteria,
        on_result_found=workflow.on_result_found,
        phases=[
            PhaseDefinition.model_construct(
                id=phase.key,
                name=phase.name,
                description=phase.description,
                sequence_order=phase.sequence_order,
                allowed_transitions=[target.key for target in phase.allowed_transitions.all()],
                is_terminal=phase.is_terminal,
                done_definitions=list(phase.done_definitions),
                expected_outputs=[
                    ExpectedOutput.model_construct(
                        **{"required": True, "pattern": "", "validation_rule": None, **output}
                    )
                    for output in phase.expected_outputs
                ],
                phase_prompt=phase.phase_prompt,
                next_steps_guide=list(phase.next_steps_guide),
                validation_criteria=[
                    ValidationCriterion.model_construct(**criterion) if isinstance(criterion, dict) else criterion
                    for criterion in phase.validation_criteria
                ],
                configuration=_configuration(phase.configuration),
            )
            for phase in phases
        ],
        board_columns=[
            ColumnDefinition.model_construct(
                id=column.key,
                name=column.name,
                description=column.description,
                sequence_order=column.sequence_order,
                phase_mapping=[phase.key for phase in column.phases.all()],
                wip_limit=column.wip_limit,
                wip_policy=column.wip_policy,
                is_terminal=column.is_terminal,
                category=column.category,
                auto_transition_to=column.auto_transition_to.key if column.auto_transition_to else None,
                color_theme=column.color,
            )
            for column in columns
        ],
    )


def workflow_export(*, workflow):
    """The workflow as YAML text that load_workflow accepts and that reloads to the same workflow."""
    header = f"Workflow {workflow.slug!r}, version {workflow.version}, exported from Omoi."
    return dump_workflow(workflow_definition(workflow), header=header)
