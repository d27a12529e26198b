"""A small English calibration text written for secateurs (no third-party text), shipped as a module so
it travels with any install. Varied registers: narration, explanation, instructions, dialogue, news."""

ENGLISH = """\
The river had been rising for three days when the ferryman decided to stop taking passengers. He tied the boat to the
old oak, carried the oars up to the shed, and sat on the porch watching brown water carry branches past the landing.
By evening the village had heard the news, and a small crowd gathered to ask how long the crossing would be closed.
"Until the water goes down," he said, which satisfied nobody but was the only honest answer he could give.

Bridges are older than most people think. Long before engineers could calculate loads, builders learned by trial which
shapes stood and which fell. The arch was the great discovery: a curve of stones that presses each block against its
neighbours, so that weight on top becomes compression along the curve and the whole span holds itself together.
Roman builders used arches for aqueducts that still carry water in a few places today. Later, iron and then steel made
it possible to hang a deck from cables, and suspension bridges now cross straits several kilometres wide.

To make a simple loaf of bread, mix five hundred grams of flour with ten grams of salt and a spoonful of yeast. Add
about three hundred and fifty millilitres of warm water and stir until no dry flour remains. Cover the bowl and leave
it for an hour, then fold the dough over itself a few times and shape it into a ball. Let it rise again until it has
nearly doubled, bake it in a hot oven for forty minutes, and wait until it has cooled before cutting the first slice.

Scientists measure the age of rocks by watching unstable atoms decay. Each radioactive isotope turns into another
element at a steady rate, described by its half-life, the time it takes for half of a sample to change. By comparing
how much of the original isotope remains with how much of its product has accumulated, a geologist can estimate when
the rock formed. Different isotopes suit different ages: some are useful for thousands of years, others for billions.

"Did you remember the tickets?" she asked as they reached the platform.
"They are on my phone," he replied, patting his pocket, and then his other pocket, and then his jacket.
"You left the phone on the kitchen table, didn't you?"
He did not answer, which was an answer in itself, and the train pulled in while they were still laughing about it.

The city council voted on Tuesday to extend the cycle lanes along the northern ring road. Supporters said the change
would make the route safer for commuters and schoolchildren, while some shop owners worried that fewer parking spaces
would keep customers away. Construction is expected to begin in the spring and to last about six months. The council
also approved a small increase in the budget for public libraries, which will open for longer hours on weekends.

A computer program is a list of instructions written precisely enough that a machine can follow them without asking
questions. The difficulty is rarely the machine; it is the person who must describe a task so completely that nothing
is left to guesswork. Good programmers break large problems into small pieces, test each piece on its own, and name
things clearly so that the next reader, who is often themselves a year later, can understand what was intended.

In the mountains the weather changes faster than visitors expect. A clear morning can turn to fog before noon, and a
warm valley can lie below a ridge where the wind is strong enough to knock a walker off balance. Experienced hikers
carry a map, water, a warm layer and something to eat, tell someone where they are going, and turn back early when the
clouds begin to build. The summit will still be there next week; the point of the walk is to come home.

Plants turn light into food. Inside their leaves, chlorophyll absorbs sunlight and uses its energy to combine carbon
dioxide from the air with water drawn up from the roots. The result is sugar, which the plant uses to grow, and oxygen,
which it releases. Almost every food chain on land begins with this process, and the oxygen we breathe was produced,
over hundreds of millions of years, by plants and by tiny organisms floating in the oceans.

The museum's new exhibition brings together maps drawn over five centuries. The oldest show coastlines traced by
sailors who had never seen the interior, with blank spaces filled by rivers that do not exist and mountains placed by
rumour. Later maps grow more accurate and less imaginative at the same time. Visitors can compare three versions of the
same harbour and see how the town around it grew from a handful of houses into a port with docks and warehouses.

Learning a language as an adult is slow, but it is far from hopeless. Children have time and few expectations; adults
have discipline and the ability to study grammar deliberately. The most reliable method is also the least exciting:
a little practice every day, listening to real speech, reading things that are slightly too hard, and speaking with
patient people who will forgive mistakes. After a year the progress is obvious, even if it never felt fast.

When the storm finally passed, the ferryman walked down to the landing and found the boat still tied to the oak, half
full of rainwater and leaves. He bailed it out, checked the ropes, and fetched the oars from the shed. The river was
still high, but it had slowed, and by the afternoon the first passengers were waiting on the far bank, waving to him
as if nothing had happened at all.
"""
