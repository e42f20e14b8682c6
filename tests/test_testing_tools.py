"""The pytest fixtures a plugin author gets by installing nexus-otel."""

pytest_plugins = ["pytester"]


def test_fixtures_are_registered_through_the_entry_point(pytester):
    """A plain test file can use nexus_app and nexus_capture with no conftest."""
    pytester.makepyfile(
        """
        from nexus_otel import NexusPlugin

        class Greeter(NexusPlugin):
            name = "greeter"
            def setup(self, nexus_app):
                nexus_app.on_workflow_completed(lambda e: None)

        def test_plugin(nexus_app, nexus_capture):
            nexus_app.add_plugin(Greeter())
            nexus_app.register("hi", lambda inputs: "hello")
            assert nexus_app.execute_workflow("hi") == "hello"
            wf = nexus_capture.span("workflow hi")
            assert [s.name for s in nexus_capture.children(wf)] == ["hook workflow_completed greeter"]
            assert nexus_capture.metric_value("nexus.workflow.executions", workflow="hi") == 1

        def test_span_helper_fails_loudly(nexus_capture):
            nexus_capture.span("never made")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*expected one span 'never made', found 0*"])
