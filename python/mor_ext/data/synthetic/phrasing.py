"""Text tables: requests no tool can serve (the ``no_tool`` kind) and the reasoner's phrasings."""

from __future__ import annotations


NO_TOOL = (  # (queries, what the user wants, whether the answer declines, answers)
    (("What's the weather like in {city} right now?", "Will it rain in {city} this afternoon?"),
     "live weather for {city}", True,
     ("I can't check live weather: none of my tools provide forecasts or current conditions.",
      "Sorry, I have no access to weather data, so I can't tell you about {city} right now.")),
    (("Book a table for {n} at an Italian restaurant tonight.", "Reserve dinner for {n} people at 8 pm."),
     "a restaurant booking", True,
     ("I can't make reservations; my tools only compute and look things up. Please book directly with the restaurant.",
      "Booking tables is outside what I can do here, sorry.")),
    (("Send an email to my manager saying I'll be late.", "Text my sister that I'm on my way."),
     "a message sent on their behalf", True,
     ("I can't send messages for you. A short note like \"Running late, be there soon\" would do.",
      "Sending messages isn't something my tools can do.")),
    (("Set an alarm for {time} tomorrow.", "Remind me at {time} to call the dentist."),
     "an alarm or reminder", True,
     ("I can't set alarms or reminders; please use your phone's clock app.",
      "Sorry, I have no way to schedule reminders.")),
    (("What is {company}'s share price at the moment?", "How is {company} stock doing today?"),
     "a live stock quote for {company}", True,
     ("I don't have live market data, so I can't give you {company}'s current share price.",
      "Real-time stock prices are beyond my tools, sorry.")),
    (("Hi! What can you help me with?", "Hello there, what sorts of things can you do?"),
     "to know what I can do", False,
     ("Hello! I can do calculations and statistics, unit and currency conversions (fixed rates), date and time "
      "arithmetic, text utilities, geometry, simple finance, and a few fact lookups.",
      "Hi! Ask me for conversions, date math, geometry, finance calculations or quick lookups.")),
    (("Thanks, that's all for now.", "Great, thank you for the help!"),
     "to close the conversation", False,
     ("You're welcome! Come back any time.", "Glad I could help. Have a good day!")),
    (("Tell me a joke about computers.", "Got a programming joke for me?"),
     "a joke", False,
     ("Why do programmers prefer dark mode? Because light attracts bugs.",
      "There are 10 kinds of people: those who understand binary and those who don't.")),
    (("Write a two-line poem about the {season}.", "Give me a short rhyme about {season}."),
     "a short poem about {season}", False,
     ("The {season} light is soft and low,\nit lingers long, then turns to go.",
      "In {season} days the hours run slow,\nand quiet winds come and go.")),
    (("Order a large pizza to my address.", "Can you get me a taxi to the airport?"),
     "a real-world order", True,
     ("I can't place orders or call services; please use the provider's app.",
      "Sorry, ordering things isn't something my tools support.")),
    (("What are today's top news headlines?", "Anything big in the news this morning?"),
     "today's news", True,
     ("I have no access to news feeds, so I can't tell you today's headlines.",
      "I can't browse current news, sorry.")),
    (("Which is better for a beginner, Python or JavaScript?", "Should I learn Python or JavaScript first?"),
     "advice on a first programming language", False,
     ("Both are good first languages: Python reads more simply, JavaScript runs in every browser. Pick the one "
      "that matches what you want to build.",
      "Python is often easier to start with; choose JavaScript if you mainly want to build web pages.")),
    (("Who will win the next football world cup?", "Predict the winner of the next {season} league."),
     "a prediction of a future event", True,
     ("Nobody can know that in advance, and none of my tools can predict outcomes.",
      "I can't predict future results.")),
)
NO_TOOL_FILL = {"city": ("Paris", "Oslo", "Lima", "Nairobi", "Seoul", "Denver"), "n": ("two", "four", "six"),
                 "time": ("6:30", "7:15", "8:00", "9:45"), "company": ("Acme Corp", "Globex", "Initech", "Umbrella Ltd"),
                 "season": ("autumn", "winter", "spring", "summer")}


# -------------------------------------------------------------------------------- reasoner text
PLAN_SINGLE = ("The user wants to {goal}. The {tool} tool does exactly that, so I'll call it.",
                "I need to {goal}. {tool} is the right tool for this.",
                "To answer, I should {goal}. I'll call {tool} with the values from the question.",
                "This is a job for {tool}: I need to {goal}.",
                "Of the available tools, {tool} fits: it lets me {goal}.")
DONE_SINGLE = ("{tool} returned {raw}. That answers the question.", "The result is {raw}; I can answer now.",
                "I have what I need: {raw}.", "The tool gave {raw}, which is what the user asked for.")
# Chain plans name both tools before they say "two steps", and the several-tools plans of
# episodes.parallel_multiple name theirs before "one turn": whether the calls wait for each other is
# decided once the tools are written, from whether one needs the other's result. (With "This takes
# two steps" as an opening, the tuned MoR reasoner opened 17 of 20 BFCL parallel_multiple answers with
# it and made only the first call: RESULTS.md, stage five.)
PLAN_MULTI = ("{tool1} to {goal1}, then {tool2} to {goal2}: the second needs the first's result, so two steps. "
              "I'll start with {tool1}.",
              "I need to {goal1} with {tool1} before {tool2} can {goal2}, since it takes that result. First, {tool1}.",
              "{tool1} and {tool2} are both needed: {tool1} to {goal1}, then {tool2}, which uses its output, to "
              "{goal2}. Step one now.",
              "To {goal2}, {tool2} needs a value that {tool1} gives: {tool1} can {goal1}. So {tool1} first, "
              "then {tool2}.")
MID_MULTI = ("{tool1} returned {raw1}. Now I'll {goal2} with {tool2}.",
              "Step one gave {raw1}. Next, {tool2} with that value.",
              "Got {raw1}. I'll pass it to {tool2} to {goal2}.")
DONE_MULTI = ("{tool2} returned {raw2}, so I have the final answer.", "Both steps are done; the result is {raw2}.",
               "Final value: {raw2}. Time to answer.")
# The tools are named before the decision, as in the single plans (see episodes.refusal_near_miss;
# tool names keep their case even at a sentence start).
PLAN_NONE = ("The user wants {need}. {tools} {are} all I have, and {none} help with that, so no call is "
             "needed; I'll {plan}.",
             "This asks for {need}. {tools} {do} something else, so {they} cover it. I'll {plan}.",
             "{tools} {are} unrelated to this request, which is {need}. No tool applies; I'll {plan}.")
