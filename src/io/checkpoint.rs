//! Checkpoints: a model with its optimizer's state, the step count and a random generator's
//! state, so that training resumes exactly where it stopped.
