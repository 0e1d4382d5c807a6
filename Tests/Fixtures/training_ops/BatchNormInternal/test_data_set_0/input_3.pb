B
input_meanJ•=Én²<