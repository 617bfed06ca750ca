"""Pure statistics the decision is made with: no Django, no database."""
