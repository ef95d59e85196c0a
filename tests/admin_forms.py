"""Helpers for posting admin change forms the way a browser does."""


def change_data(response, **changes):
    """What a browser posts back for the admin form on `response`, with `changes` applied (None drops a field)."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        forms += [inline.formset.management_form, *inline.formset.forms]
    data = {}
    for form in forms:
        for name in form.fields:
            value = form[name].value()
            if value is not None and value is not False:
                data[form.add_prefix(name)] = value
    data.update(changes)
    return {name: value for name, value in data.items() if value is not None}


def errors_of(response):
    return {name: list(errors) for name, errors in response.context["adminform"].form.errors.items()}
