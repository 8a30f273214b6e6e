"""Who may invoke each Lambda function, read from the synthesized template (a full configuration with a drill).

A step trusts nothing in its event, and on top of that only its own state machine may call it: each state machine's
role may invoke exactly the functions its definition names; the safety nets are invoked only by their EventBridge
rule (a resource policy with that rule as source); the staleness check only by its schedule's role; no other
principal, no wildcard, no function role that invokes another function. (moto does not enforce IAM, so this is
proven on the template.)
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from typing import Any

import pytest

from functions.models.steps import OPERATIONS
from tests.infra.test_drill_template import CONFIG

INVOKE = "lambda:InvokeFunction"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from rehearsal.synth import synthesized

    return synthesized(CONFIG, checks=True).template  # the drill template's synthesis, shared


def refs(value: Any) -> Iterator[str]:
    """Logical ids a template value points at (Ref, Fn::GetAtt), anywhere inside it."""
    if isinstance(value, dict):
        if "Ref" in value and isinstance(value["Ref"], str):
            yield value["Ref"]
        if "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"][0]
        for inner in value.values():
            yield from refs(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from refs(inner)


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def invoke_statements(template: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(role logical id, statement) for every identity-policy statement that could invoke a function."""
    for policy in of_type(template, "AWS::IAM::Policy").values():
        props = policy["Properties"]
        for statement in props["PolicyDocument"]["Statement"]:
            actions = listed(statement.get("Action", []))
            if statement.get("Effect") == "Allow" and any(fnmatch.fnmatch(INVOKE, a) for a in actions):
                for role in props.get("Roles", []):
                    yield role["Ref"], statement
    for logical, role in of_type(template, "AWS::IAM::Role").items():
        for policy in role["Properties"].get("Policies", []):
            for statement in policy["PolicyDocument"]["Statement"]:
                if any(fnmatch.fnmatch(INVOKE, a) for a in listed(statement.get("Action", []))):
                    yield logical, statement
    for policy in of_type(template, "AWS::IAM::ManagedPolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            assert not any(fnmatch.fnmatch(INVOKE, a) for a in listed(statement.get("Action", []))), statement


def test_no_invoke_grant_is_a_wildcard(template: dict[str, Any]) -> None:
    functions = set(of_type(template, "AWS::Lambda::Function"))
    found = list(invoke_statements(template))
    assert found, "the state machines invoke their functions"
    for role, statement in found:
        assert listed(statement["Action"]) == [INVOKE], (role, statement["Action"])  # not lambda:* or *
        for resource in listed(statement["Resource"]):
            assert resource != "*", role
            assert set(refs(resource)) and set(refs(resource)) <= functions, (role, resource)


def test_each_function_is_invoked_only_by_its_own_state_machine_or_rule(template: dict[str, Any]) -> None:
    functions = of_type(template, "AWS::Lambda::Function")
    machines = of_type(template, "AWS::StepFunctions::StateMachine")
    roles = of_type(template, "AWS::IAM::Role")
    machine_of_role = {next(refs(m["Properties"]["RoleArn"])): logical for logical, m in machines.items()}

    invokers: dict[str, set[str]] = {f: set() for f in functions}
    for role, statement in invoke_statements(template):
        for resource in listed(statement["Resource"]):
            for fn in refs(resource):
                invokers[fn].add(role)

    for fn, principals in invokers.items():
        handler = functions[fn]["Properties"]["Handler"]
        for role in principals:
            trusted = {
                s["Principal"].get("Service")
                for s in roles[role]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
            }
            # No function's role (lambda.amazonaws.com) may invoke a function: a step cannot call another step.
            assert "lambda.amazonaws.com" not in trusted, (fn, role)
            if role in machine_of_role:
                # A state machine's role invokes only the functions its own definition names.
                definition = machines[machine_of_role[role]]["Properties"]["DefinitionString"]
                assert fn in set(refs(definition)), (fn, machine_of_role[role])
            else:
                # Outside the state machines only the staleness check's schedule invokes a function, with its role.
                assert trusted == {"scheduler.amazonaws.com"} and handler == OPERATIONS.staleness_check.handler, (
                    fn,
                    role,
                )

    # Every state machine's role may invoke every function its definition names, and nothing else.
    for logical, machine in machines.items():
        role = next(refs(machine["Properties"]["RoleArn"]))
        named = set(refs(machine["Properties"]["DefinitionString"])) & set(functions)
        assert named and {fn for fn, who in invokers.items() if role in who} == named, logical

    # Resource policies: only EventBridge, only for the safety nets, each from the rule that targets it.
    rules = of_type(template, "AWS::Events::Rule")
    permissions = of_type(template, "AWS::Lambda::Permission")
    by_rule: dict[str, set[str]] = {}
    for permission in permissions.values():
        props = permission["Properties"]
        fn = next(refs(props["FunctionName"]))
        assert props["Action"] == INVOKE and props["Principal"] == "events.amazonaws.com", props
        rule = next(refs(props["SourceArn"]))
        assert rule in rules and fn in set(refs(rules[rule]["Properties"]["Targets"])), (fn, rule)
        assert "safety_net" in functions[fn]["Properties"]["Handler"], fn
        by_rule.setdefault(fn, set()).add(rule)

    # Every function has an invoker, and the safety nets none but their rule.
    for fn, resource in functions.items():
        handler = resource["Properties"]["Handler"]
        if "safety_net" in handler:
            assert not invokers[fn] and len(by_rule.get(fn, set())) == 1, fn
        else:
            assert invokers[fn] and fn not in by_rule, fn


def test_the_drills_restores_run_in_their_own_state_machine(template: dict[str, Any]) -> None:
    """Only the drill's restore state machine tells the restore's validate step it is a drill (a constant in its
    definition); the drill starts that one, not the operators' restore state machine."""
    machines = of_type(template, "AWS::StepFunctions::StateMachine")
    restore = [k for k in machines if k.startswith("Restore") and "ForDrills" not in k]
    for_drills = [k for k in machines if "ForDrills" in k]
    drill = [k for k in machines if k.startswith("Drill")]
    assert len(restore) == len(for_drills) == len(drill) == 1

    def text(logical: str) -> str:
        import json

        return json.dumps(machines[logical]["Properties"]["DefinitionString"])

    assert '\\"drill\\":true' in text(for_drills[0]) and '\\"drill\\":true' not in text(restore[0])
    started = set(refs(machines[drill[0]]["Properties"]["DefinitionString"]))
    assert for_drills[0] in started and restore[0] not in started
    name = machines[for_drills[0]]["Properties"]["StateMachineName"]
    functions = of_type(template, "AWS::Lambda::Function")
    told = [
        f
        for f, r in functions.items()
        if r["Properties"].get("Environment", {}).get("Variables", {}).get("DRILL_RESTORE_STATE_MACHINE") == name
    ]
    # The restore's functions (validate, parts, checks, finish, failure, safety net) and the drill's own.
    assert len(told) >= 12
