"""Hospital systems talking to signflow: API submissions, webhooks, FHIR documents."""
