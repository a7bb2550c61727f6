"""Child processes of a test run die with it, even when the run is killed outright."""

from daphne.testing import DaphneProcess

from chatsite.processes import die_with_parent


class OrphanProofDaphneProcess(DaphneProcess):
    """The live server of ChannelsLiveServerTestCase, ended if the test process dies."""

    def run(self) -> None:
        die_with_parent()
        super().run()
