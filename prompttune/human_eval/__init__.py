"""Human evaluation of prompts: a study of systems' outputs judged by raters (`study`), the page
they judge them on (`app`), and what their judgements say (`stats`, `report`)."""
